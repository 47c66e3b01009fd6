# Airflow with exactly hdh-migration's pinned dependencies (requirements.txt, the lock).
# The slim image carries no providers of its own, so nothing outside the lock ends up installed
# beside it; tests/compose keeps this tag equal to the lock's apache-airflow pin.
FROM apache/airflow:slim-3.3.2-python3.11

COPY requirements.txt /requirements.txt
# The lock pins every distribution, so it is its own constraint set; naming apache-airflow
# again makes pip refuse, rather than perform, any change of Airflow's version.
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /requirements.txt

# hdh-migration's image: Airflow with exactly the project's pinned dependencies (requirements.txt,
# the lock, with hashes) and the project itself (the DAGs, the package, the suites and the schemas),
# so that the image alone runs every component: docker-compose.yml and Airflow's official Helm chart
# (images.airflow) run it as it is, with no folder mounted. tests/compose/test_docker_compose.py reads
# this file: the base tag equals the lock's apache-airflow pin, the four folders are copied, and no
# test tooling, state or secret goes in (.dockerignore keeps the build context to what is copied).
# The slim image carries no providers of its own, so nothing outside the lock ends up installed.
FROM apache/airflow:slim-3.3.2-python3.11

COPY requirements.txt /requirements.txt
# Every line of the lock carries its hashes: pip checks each download against them. The lock pins
# apache-airflow at this image's version, so pip refuses, rather than performs, any change of it.
RUN pip install --no-cache-dir --require-hashes -r /requirements.txt

# dags/domains.yaml names its schema and suite files as ../schemas and ../expectations: the four
# folders sit side by side under AIRFLOW_HOME, as in the repository. Owned by airflow, group 0, as
# the official image's own files (any uid of group 0 can read them, e.g. on OpenShift).
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 expectations/ /opt/airflow/expectations/
COPY --chown=airflow:0 schemas/ /opt/airflow/schemas/
# The package hdh_migration is imported by DAG files, task processes and `python -m hdh_migration`.
ENV PYTHONPATH=/opt/airflow/plugins

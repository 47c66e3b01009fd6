"""A catalogue the size of the real SNDS dictionary (~220 tables), for the scale bench and its CI test.

The tables carry SNDS names, spread over the real domains (DCIR and DCIRS monthly, the four PMSI
fields and CépiDc yearly, beneficiaries and referentials as snapshots). Each table's Table Schema
file is a copy of the project's real schema of the same shape (``ER_PRS_F`` for a DCIR flux table,
``T_MCOaaB`` for a PMSI table, ``KI_CCI_R`` for CépiDc, ``IR_BEN_R`` for a referential) under the
table's own name; its expectation suite is generated from it as ``python -m hdh_migration suites``
does. Referentials beyond the listed names are numbered (``IR_R07_V``) to reach the requested size.

    python bench/scale_catalogue.py DIR [--tables 220]    # writes DIR/domains.yaml, schemas/, expectations/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas"

DCIR = [
    "ER_PRS_F",
    "ER_PHA_F",
    "ER_BIO_F",
    "ER_CAM_F",
    "ER_ETE_F",
    "ER_UCD_F",
    "ER_TIP_F",
    "ER_ARO_F",
    "ER_CPT_F",
    "ER_DCT_F",
    "ER_INV_F",
    "ER_LOC_F",
    "ER_MED_F",
    "ER_RAT_F",
    "ER_TRS_F",
    "ER_ANO_F",
    "ER_DTR_F",
    "ER_ECT_F",
    "ER_MDE_F",
    "ER_PEN_F",
    "ER_PRE_F",
    "ER_TUC_F",
    "ER_IND_F",
    "ER_ACC_F",
    "ER_NAI_F",
]
DCIRS = "NS_PRS_F NS_PHA_F NS_BIO_F NS_CAM_F NS_ETE_F NS_UCD_F NS_TIP_F NS_ARO_F NS_INV_F NS_MED_F NS_RAT_F NS_TRS_F"
PMSI = {
    "pmsi_mco": (
        "MCO",
        "A B C D E FA FB FC FH FL FM FP UM MED MEDATU MEDTHROMBO DMIP PO CSTC FASTC FBSTC FCSTC FHSTC FLSTC "
        "FMSTC FPSTC VALO IPO",
    ),
    "pmsi_had": ("HAD", "A B C D DMPP DMPA MED MEDATU MEDCHL FA FB FC FH FL FM FP E GHPC VALO"),
    "pmsi_ssr": ("SSR", "B C CCAM CSARR D E FA FB FC FH FL FM FP MED MEDATU MEDCHL RHS VALO GME STC"),
    "pmsi_psy": ("RIP", "C RSA RSAD R3A R3AD FA FB FC FH FL FM FP MED E STC"),
}
BENEFICIAIRES = "IR_BEN_R IR_IBA_R IR_IMB_R IR_ORC_R IR_MTT_R IR_ANO_R"
REFERENTIELS = [
    "ACT",
    "AMA",
    "ASU",
    "CAT",
    "CIM",
    "CCI",
    "CPT",
    "DPT",
    "DTE",
    "ETB",
    "EXO",
    "GES",
    "IMP",
    "LIE",
    "MOD",
    "MTF",
    "NAT",
    "NUM",
    "ORG",
    "PRS",
    "REG",
    "RES",
    "SEX",
    "SPE",
    "STJ",
    "TIP",
    "TOP",
    "UCD",
    "BIO",
    "LPP",
    "NGA",
    "ACS",
    "AMO",
    "ATT",
    "BSE",
    "CAI",
    "CMU",
    "COG",
    "CSP",
    "DIS",
    "DRG",
    "ECH",
    "EXE",
    "FJH",
    "GHM",
    "GHS",
    "GRG",
    "INS",
    "JUR",
    "LOC",
    "MDT",
    "MEP",
    "MFT",
    "NBE",
    "NOE",
    "NUC",
    "OPT",
    "PAY",
    "PCS",
    "PHA",
    "POS",
    "PRE",
    "QUA",
    "RAT",
    "RGM",
    "RPS",
    "SAN",
    "SCT",
    "SEC",
    "SOI",
    "STA",
    "TAU",
    "TPS",
    "TRS",
    "TYP",
]


def _domains(tables: int) -> dict[str, dict]:
    """Domain name -> grain, partitions, owner, template schema, partition column, key, format, table names."""
    pmsi_keys = {"template": "T_MCOaaB", "partition_column": "SOR_ANN", "primary_key": ["ETA_NUM", "RSA_NUM"]}
    # The snapshot domains (beneficiaires, and the referentiels standing in for the other IR_ tables).
    snapshot = {
        "grain": "snapshot",
        "first_partition": "2024-06-30",
        "cutover_partition": "2024-06-30",
        "template": "IR_BEN_R",
        "partition_column": "snapshot",
        "primary_key": ["BEN_NIR_PSA", "BEN_RNG_GEM"],
    }
    domains = {
        "dcir": {
            "grain": "monthly",
            "first_partition": "2005-01-01",  # 240 monthly partitions: the backfill of the scale bench
            "cutover_partition": "2024-12-01",
            "template": "ER_PRS_F",
            "partition_column": "FLX_DIS_DTD",
            "tables": DCIR,
        },
        "dcirs": {
            "grain": "monthly",
            "first_partition": "2013-01-01",
            "cutover_partition": "2024-12-01",
            "template": "ER_PHA_F",
            "partition_column": "FLX_DIS_DTD",
            "tables": DCIRS.split(),
        },
        "causes_deces": {
            "grain": "yearly",
            "first_partition": "2000",
            "cutover_partition": "2021",
            "template": "KI_CCI_R",
            "partition_column": "FLX_PER_ANN",
            "format": "csv",
            "tables": ["KI_CCI_R", "KI_ECD_R"],
        },
        "beneficiaires": {**snapshot, "tables": BENEFICIAIRES.split()},
    }
    for name, (field, suffixes) in PMSI.items():
        domains[name] = {
            "grain": "yearly",
            "first_partition": "2006",
            "cutover_partition": "2023",
            **pmsi_keys,
            "tables": [f"T_{field}aa{suffix}" for suffix in suffixes.split()],
        }
    fixed = sum(len(d["tables"]) for d in domains.values())
    wanted = max(1, tables - fixed)
    codes = REFERENTIELS[:wanted] + [f"R{i:02d}" for i in range(wanted - len(REFERENTIELS))]
    domains["referentiels"] = {**snapshot, "tables": [f"IR_{code}_V" for code in codes]}
    return domains


def write_scale_catalogue(directory: Path, tables: int = 220, *, optional: bool = False) -> Path:
    """Write ``directory/domains.yaml`` with its schema files and generated suites; return its path.

    ``optional`` marks every table optional, so a partition with no source objects plans nothing
    and the run measures the orchestration alone.
    """
    from hdh_migration.catalogue import load_catalogue
    from hdh_migration.suites import write_all

    directory = Path(directory)
    (directory / "schemas").mkdir(parents=True, exist_ok=True)
    templates = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in SCHEMAS.glob("*.json")}
    always = {"timezone": "Europe/Paris", "weekdays": "all", "weekends": "all"}
    catalogue = {
        "version": 1,
        "source_container": "snds-scale",
        "target_bucket": "hdh-snds-scale",
        "waves": {wave: {"start": "2005-01-01", "window": always} for wave in (1, 2, 3)},
        "domains": {},
    }
    for wave, (name, spec) in enumerate(sorted(_domains(tables).items()), start=1):
        entries = {}
        for table in spec["tables"]:
            schema = {**templates[spec["template"]], "name": table}
            (directory / "schemas" / f"{table}.json").write_text(
                json.dumps(schema, ensure_ascii=False, indent=1), encoding="utf-8"
            )
            entry = {
                "format": spec.get("format", "parquet"),
                "partition_column": spec["partition_column"],
                "primary_key": spec.get("primary_key"),
                "schema": f"schemas/{table}.json",
                "suite": f"expectations/{name}/{table}.json",
            }
            if entry["format"] == "csv":
                entry["csv"] = {"delimiter": ";", "decimal_point": ",", "encoding": "latin-1"}
            if optional:
                entry["optional"] = True
            entries[table] = entry
        catalogue["domains"][name] = {
            "description": f"{name} ({len(entries)} tables), synthetic scale catalogue",
            "owner": f"team-{name.split('_')[0]}",
            "wave": 1 + wave % 3,
            "grain": spec["grain"],
            "first_partition": spec["first_partition"],
            "cutover_partition": spec["cutover_partition"],
            "tables": entries,
        }
    path = directory / "domains.yaml"
    path.write_text(yaml.safe_dump(catalogue, sort_keys=False), encoding="utf-8")
    write_all(load_catalogue(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--tables", type=int, default=220)
    parser.add_argument("--optional", action="store_true", help="mark every table optional")
    args = parser.parse_args()
    path = write_scale_catalogue(args.directory, args.tables, optional=args.optional)
    print(path)


if __name__ == "__main__":
    main()

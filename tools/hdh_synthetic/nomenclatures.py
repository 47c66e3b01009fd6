"""Small built-in samples of the nomenclatures the SNDS uses most, and plausible ranges by meaning.

A column takes a nomenclature's codes when its schema names the nomenclature (``nomenclature:
IR_CIM_V`` is ICD-10) or, where schemas name none, when its name or description says what it holds
(a FINESS number, an ATC class, a CIP or UCD drug code). Each sample holds real, well-formed codes:
honest format rules in the suites (ICD-10, FINESS on 9 digits, CIP13 starting with 34009) pass.

Numbers get a range from their meaning, read from name and description: ages, rates, counts of
days, counts. Without one, the declared length bounds them (``_TYPICAL_NUMBER_MAX`` otherwise).
"""

from __future__ import annotations

import re

from hdh_migration.schema import Column

ICD10 = (
    "I219", "C349", "J189", "E119", "I10", "I48", "I639", "J449", "C509", "C61", "F03", "G309",
    "N179", "K746", "R54", "X70", "A419", "U071", "S7200", "O800", "Z380", "P0730",
)  # fmt: skip
# CCAM acts: 4 letters, 3 digits
CCAM = ("YYYY600", "DEQP003", "ZBQK002", "HHFA016", "NFKA007", "JKFA015", "EBLA003", "GLLD015", "BFGA004")
# FINESS numbers: 2-character département (2A/2B in Corsica), 6-digit order, a check digit
FINESS = ("750712184", "130786049", "690781810", "330781196", "2A0000154", "590780193", "310781406", "970211207")
ATC = ("N02BE01", "C10AA05", "A10BA02", "B01AC06", "C09AA05", "J01CA04", "N06AB06", "R03AC02", "H03AA01")
CIP13 = (3400934998331, 3400935955838, 3400936404700, 3400930000120, 3400949500673, 3400927741102)
CIP7 = (3499833, 3595583, 3640470, 3000012, 4950067, 2774110)
UCD13 = ("3400893875553", "3400892223546", "3400891225640", "3400893022896", "3400894286365")
UCD7 = ("9387555", "9222354", "9122564", "9302289", "9428636")

_ICD10_NOMENCLATURE = re.compile(r"^(IR|MS)_CIM_V")
_CCAM = re.compile(r"CCAM|_CAM_V|_ACT_COD$|^CDC_ACT$")
_FINESS = re.compile(r"(?i)finess|^ETA_NUM(_GEO|_EPMSI)?$|_FIN$")
_ATC = re.compile(r"ATC")
_CIP = re.compile(r"(?i)\bCIP\b|_C13$|_CIP")
_UCD = re.compile(r"(?i)^NU_UCD|UCD_COD|\bUCD\b")


def codes(column: Column, width: int | None) -> tuple | None:
    """The sample of the nomenclature the column holds, fitted to its type and width, or None."""
    nomenclature = (column.nomenclature or "").split(":")[0]
    name, text = column.name, column.description
    if column.type == "string":
        if _ICD10_NOMENCLATURE.match(nomenclature):
            sample = ICD10
        elif _CCAM.search(nomenclature) or _CCAM.search(name):
            sample = CCAM
        elif _UCD.search(nomenclature) or _UCD.search(name):
            sample = UCD13 if (width or 13) >= 13 else UCD7
        elif _FINESS.search(name) or _FINESS.search(text):
            sample = FINESS if (width or 9) >= 9 else tuple(code[:8] for code in FINESS)
        elif _ATC.search(name) or _ATC.search(nomenclature):
            sample = ATC
        else:
            return None
        return tuple(code for code in sample if len(code) <= (width or len(code)))
    if column.type == "integer":
        if _CIP.search(name) or (nomenclature == "IR_PHA_R" and _CIP.search(text)):
            return CIP13 if (column.length or "") == "13" else CIP7
        if _FINESS.search(name) or _FINESS.search(text):
            return tuple(int(code) for code in FINESS if code.isdigit())
    return None


_AGE = re.compile(r"(?i)^(âge|age)\b|^AGE_|_AGE$")
_RATE = re.compile(r"(?i)\btaux\b|_TAU$|pourcentage")
_DAYS = re.compile(r"(?i)_NBJ$|\bdurée\b|nombre de (jours|journées)")
_COUNT = re.compile(r"(?i)^nombre\b|^NBR_|_NBR$|_QTE$|\bquantité\b")


def plausible_range(column: Column) -> tuple[float, float] | None:
    """A range real values of this meaning stay in (ages, rates, days, counts), or None."""
    name, text = column.name, column.description
    if _AGE.search(name) or _AGE.search(text):
        return 0, 105
    if _RATE.search(name) or _RATE.search(text):
        return 0, 100
    if _DAYS.search(name) or _DAYS.search(text):
        return 0, 365
    if _COUNT.search(name) or _COUNT.search(text):
        return 0, 30
    return None


def is_birth_year(column: Column) -> bool:
    return bool(re.search(r"NAI", column.name) or re.search(r"(?i)naissance", column.description))

"""Table specs for the medical endpoints (2020 "Starfleet" shapes in fixtures/humanapi/medical).

Beyond the common requirements (an `id`, and a usable `updatedAt` or `createdAt`), medical
records have no required fields: EHR exports routinely leave out dates, names or statuses
(12 of the 50 fixture issues have no `dateTime`), and a row with NULLs is more use to an
analyst than a reject. Every medical table also feeds medical.record_codes from its
top-level `codes` list.
"""

from __future__ import annotations

from .children import RECORD_CODES, TEST_RESULT_COMPONENTS, VITAL_RESULTS
from .common import (
    Field,
    TableSpec,
    date,
    instant,
    integer,
    number,
    text,
    text_list,
)

_ORGANIZATION = (text("organization.id"), text("organization.name"))
_CCD = (text("ccd.id"),)


def _demographics(prefix: str) -> tuple[Field, ...]:
    # shared by medical/demographics (top level) and medical/profile (under "demographics")
    return (
        date(f"{prefix}dob", "dob"),
        text(f"{prefix}gender", "gender"),
        text(f"{prefix}maritalStatus", "marital_status"),
        text(f"{prefix}language", "language"),
        text(f"{prefix}name.family", "family_name"),
        text_list(f"{prefix}name.given", "given_names"),
        text_list(f"{prefix}address.street", "address_street"),
        text(f"{prefix}address.city", "address_city"),
        text(f"{prefix}address.state", "address_state"),
        text(f"{prefix}address.zip", "address_zip"),
        text(f"{prefix}address.country", "address_country"),
    )


def _medical(
    table: str, *fields: Field, components: bool = False, vitals: bool = False
) -> TableSpec:
    children = (
        *((TEST_RESULT_COMPONENTS,) if components else ()),
        *((VITAL_RESULTS,) if vitals else ()),
        RECORD_CODES,
    )
    return TableSpec(f"medical.{table}", fields, children=children)


MEDICAL_SPECS: tuple[TableSpec, ...] = (
    _medical(
        "allergies",
        text("name"),
        text("status"),
        text("severity"),
        text("allergen.name"),
        text_list("reactionsFull.*.name", "reactions"),
        instant("dateRange.start", "start_at"),
        instant("dateRange.end", "end_at"),
        *_ORGANIZATION,
    ),
    _medical("ccds", instant("dateTime", "recorded_at"), text("author"), *_ORGANIZATION),
    _medical(
        "demographics",
        *_demographics(""),
        text("provider.organization", "provider_organization"),
        text("provider.phone", "provider_phone"),
        *_ORGANIZATION,
    ),
    _medical(
        "encounters",
        instant("dateTime", "recorded_at"),
        text("visitType"),
        text("provider.name"),
        text("provider.departmentName"),
        text("provider.address"),
        text_list("reasons"),
        text_list("diagnoses.*.name", "diagnosis_names"),
        text("patientInstruction"),
        *_ORGANIZATION,
        *_CCD,
    ),
    _medical(
        "immunizations",
        text("name"),
        instant("dates.0", "first_date_at"),
        *_ORGANIZATION,
    ),
    _medical(
        "issues",
        text("name"),
        text("status"),
        instant("dateTime", "recorded_at"),
        *_ORGANIZATION,
        *_CCD,
    ),
    _medical(
        "medications",
        text("name"),
        text("productName"),
        text("dosageInfo"),
        integer("refillsTotal"),
        text("instructions"),
        text("details.route", "route"),
        number("details.strength.number", "strength_value"),
        text("details.strength.unit", "strength_unit"),
        number("details.frequency.number", "frequency_number"),
        text("details.frequency.unit", "frequency_unit"),
        text("details.dosage.form", "dosage_form"),
        number("details.dosage.value", "dosage_value"),
        instant("startDate", "start_at"),
        instant("endDate", "end_at"),
        *_ORGANIZATION,
        *_CCD,
    ),
    _medical(
        "narratives",
        instant("dateTime", "recorded_at"),
        text("author"),
        text_list("entries.*.title", "entry_titles"),
        text_list("entries.*.text", "entry_texts"),
        *_ORGANIZATION,
        *_CCD,
    ),
    _medical(
        "plans_of_care",
        text("name"),
        text("type"),
        text("text"),
        instant("date", "planned_at"),
        text("specialty"),
        text("provider.name.family", "provider_family_name"),
        text_list("provider.name.given", "provider_given_names"),
        text("provider.departmentName"),
        *_ORGANIZATION,
    ),
    _medical(
        "procedures",
        text("name"),
        instant("dateTime", "recorded_at"),
        text("performer.phone"),
        text("performer.address"),
        text("performer.organizationName"),
        *_ORGANIZATION,
        *_CCD,
    ),
    _medical(
        "profile",
        *_demographics("demographics."),
        text("smoking.status", "smoking_status"),
        text("alcohol.use", "alcohol_use"),
    ),
    _medical(
        "social_history",
        text_list("entries.*.name", "entry_names"),
        instant("entries.0.dateTime", "recorded_at"),
        *_ORGANIZATION,
        *_CCD,
    ),
    _medical(
        "test_results",
        text("name"),
        instant("resultDateTime", "result_at"),
        text("status"),
        *_ORGANIZATION,
        *_CCD,
        components=True,
    ),
    _medical(
        "vitals",
        instant("dateTime", "recorded_at"),
        text("author"),
        text("name"),
        *_ORGANIZATION,
        *_CCD,
        vitals=True,
    ),
)

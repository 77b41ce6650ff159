"""The analyst layer: one coded, unit-normalised observations table built from the record tables.

- `mapping/` holds the reviewed mapping as data (CSV): LOINC concepts, name and endpoint rules,
  unit spellings → UCUM, exact conversion factors, "not measured" sentinels.
- `mapping.py` reads and validates it (pure); the analytics tables are declared in
  sync_pipeline/tables/analytics.py.
- The SQL that builds the tables lives with the rest of the SQL, in `warehouse/analytics.py`;
  the Dagster asset in `assets/analytics.py`.
"""

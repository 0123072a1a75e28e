"""The report stage's parts: tables, figures, BibTeX, provenance, input readers."""

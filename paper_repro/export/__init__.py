"""Exporting a trained reward model as a verified Hugging Face folder (stage ``export_rm``)."""

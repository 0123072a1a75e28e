"""paper_repro: reproduce allenai/llama-3-tulu-2-70b-uf-mean-rm (Tulu 2.5) end to end."""

__version__ = "0.1.0"

"""The accounts service as a FastAPI app (see ``main.py``)."""

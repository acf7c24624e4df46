"""The portal service as a Django project (see ``manage.py``)."""

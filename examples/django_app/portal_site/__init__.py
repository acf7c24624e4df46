"""The portal project's settings and URLs."""

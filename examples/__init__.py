"""Example services exchanging commands and events through the distributed bus (see README, Quickstart)."""

"""Deployment support: the embedded dev stack (`make run`), images, compose."""

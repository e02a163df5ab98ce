"""The development authorization server (dev_issuer.py): bearer tokens for the bridge on a developer machine."""

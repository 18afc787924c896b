"""The annotation store: crowdsourced contact corrections, QC and training-data export. No torch models."""

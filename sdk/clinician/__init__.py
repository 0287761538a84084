"""Clinician side of alert delivery: the MQTT listener, the alert store and the review pages."""

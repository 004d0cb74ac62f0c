"""The admission wire: AdmissionReview models and the /mutate endpoint (the decision: ``webhook.decision``)."""

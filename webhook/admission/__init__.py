"""The admission wire: AdmissionReview models, the admit decision, and the /mutate endpoint."""

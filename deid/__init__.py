"""De-identification of DICOM data set headers in transit (PS3.15 Annex E)."""

"""The workstation side: the apps wrapper (``dicom-agent launch``) and the workstation DICOM agent.

The agent listens on loopback for the clinician's legacy apps, puts the logged-in user's identity
into each A-ASSOCIATE-RQ (PS3.7 D.3.3.7), routes by the called AE title ``NAME@ROUTE`` to a server
agent over TLS with mutual certificates, and carries C-MOVE sub-operations back to the app's own
storage SCP.
"""

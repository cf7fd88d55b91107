"""dicomwire: the sans-I/O DICOM Upper Layer core shared by the agents.

Only :mod:`dicomwire.aio` touches sockets and the event loop; every other module is pure
(bytes in, values and bytes out) so it can be tested byte by byte and driven by any runtime.
"""

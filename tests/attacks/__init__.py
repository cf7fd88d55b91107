"""The attack ring (issue 13): one end-to-end test per attack class, against real parts on loopback.

Each test is what an attacker tries, and asserts what reached Orthanc (its REST API or its log) or
the victim (the matches a client received, the app's storage SCP), and what the decision log says.
A test that fails on today's code carries ``xfail(strict=True, raises=AssertionError)``: the ring
stays green while a hole is open, a failure of any other kind (a crash of the ring itself) is still
reported, and the fix that closes a hole turns its test into an unexpected pass, which fails until
the fix removes the marker.

``pytest tests/attacks --runxfail`` shows how each test fails today. The attacker connects from
127.0.0.2 where bounds per source address matter, the legitimate users from 127.0.0.1 (Linux routes
all of 127/8 to the loopback interface).
"""

"""The server agent: in front of an unchanged PACS, it ties every association to a verified person
(PS3.7 D.3.3.7 User Identity, checked with OpenID Connect), decides every C-ECHO, C-FIND, C-GET,
C-MOVE and C-STORE with the policy decision point (OpenID AuthZEN), forwards what is allowed
byte-for-byte from the AE title the PACS already trusts, refuses the rest with status 0124H, and
writes a decision event for each authentication and authorization.
"""

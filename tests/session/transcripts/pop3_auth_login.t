# RFC 5034 AUTH LOGIN (draft-murchison-sasl-login): "Username:" and
# "Password:" challenges in base64; a wrong password first, then the right
# one with the user name as initial response.
@protocol pop3
@user alice secret
S~ \+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@gw\.test>
C: AUTH LOGIN
S: + VXNlcm5hbWU6
C: YWxpY2U=
S: + UGFzc3dvcmQ6
C: d3Jvbmc=
S: -ERR [AUTH] Authentication failed.
C: AUTH LOGIN YWxpY2U=
S: + UGFzc3dvcmQ6
C: c2VjcmV0
S: +OK Logged in, maildrop has 0 messages (0 octets)
C: QUIT
S: +OK popgate POP3 server signing off (maildrop empty)
=closed

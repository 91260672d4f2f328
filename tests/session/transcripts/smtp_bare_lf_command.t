# A command line ended by a bare LF is refused with 500 5.5.2 (SMTP
# smuggling class; README "Behaviour"), as is a bare CR inside a line.
@protocol smtp
S: 220 gw.test ESMTP popgate
C< EHLO client.example\n
S: 500 5.5.2 Error: bare <LF> received
C< NOOP\rX\r\n
S: 500 5.5.2 Error: bare <CR> received
C: NOOP
S: 250 2.0.0 Ok
C: QUIT
S: 221 2.0.0 Bye
=closed

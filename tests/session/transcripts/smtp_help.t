# RFC 5321 §4.1.1.8 HELP: a multi-line 214; STARTTLS is listed where it is
# offered (here: a STARTTLS listener before the upgrade).
@protocol smtp
@listener tls=starttls
S: 220 gw.test ESMTP popgate
C: HELP
S: 214-2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS AUTH
S: 214 2.0.0 See RFC 5321
C: QUIT
S: 221 2.0.0 Bye
=closed

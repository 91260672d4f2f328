# RFC 1870 SIZE: EHLO announces limits.max_message_size (1024, the smallest
# the config allows); MAIL with a larger SIZE= is refused with 552 5.3.4 and
# a smaller one accepted; a bad SIZE value is 501.
@protocol smtp
@config limits.max_message_size = 1024
S: 220 gw.test ESMTP popgate
C: EHLO client.example
S: 250-gw.test
S: 250-PIPELINING
S: 250-SIZE 1024
S: 250-8BITMIME
S: 250-ENHANCEDSTATUSCODES
S: 250 AUTH PLAIN LOGIN CRAM-MD5
C: MAIL FROM:<a@example.org> SIZE=2048
S: 552 5.3.4 Message size exceeds fixed limit
C: MAIL FROM:<a@example.org> SIZE=big
S: 501 5.5.4 Bad SIZE parameter
C: MAIL FROM:<a@example.org> SIZE=1000
S: 250 2.1.0 Ok
C: QUIT
S: 221 2.0.0 Bye
=closed

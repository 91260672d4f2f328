# RFC 3207 §5 / CVE-2011-0411: commands pipelined behind STARTTLS in the same
# write are discarded, never run under TLS: after the handshake the session
# has no EHLO and no transaction, so MAIL is out of sequence.
# @whole-only: the discarded commands must reach the server in the same read
# as STARTTLS; sent byte by byte they would arrive after the upgrade.
@protocol smtp
@whole-only
@listener tls=starttls
@user alice secret
S: 220 gw.test ESMTP popgate
C: EHLO client.example
S: 250-gw.test
S: 250-PIPELINING
S: 250-SIZE 26214400
S: 250-8BITMIME
S: 250-ENHANCEDSTATUSCODES
S: 250-STARTTLS
S: 250 AUTH PLAIN LOGIN CRAM-MD5
C: STARTTLS
C: EHLO client.example
C: MAIL FROM:<a@example.org>
S: 220 2.0.0 Ready to start TLS
C! starttls
C: MAIL FROM:<a@example.org>
S: 503 5.5.1 Error: send HELO/EHLO first
C: EHLO client.example
S: 250-gw.test
S: 250-PIPELINING
S: 250-SIZE 26214400
S: 250-8BITMIME
S: 250-ENHANCEDSTATUSCODES
S: 250 AUTH PLAIN LOGIN CRAM-MD5
C: QUIT
S: 221 2.0.0 Bye
=closed

# An auth_required listener with local_delivery_without_auth = true: without
# AUTH an outside recipient is refused (only AUTH counts there, not grants or
# networks) and a local recipient is accepted; after AUTH it relays.
@protocol smtp
@listener tls=starttls auth_required=yes local_delivery_without_auth=yes
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
C: MAIL FROM:<alice@gw.test>
S: 250 2.1.0 Ok
C: RCPT TO:<x@example.org>
S: 554 5.7.1 <x@example.org>: Relay access denied
C: RCPT TO:<alice@gw.test>
S: 250 2.1.5 Ok
C: RSET
S: 250 2.0.0 Ok
C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
S: 235 2.7.0 Authentication successful
C: MAIL FROM:<alice@gw.test>
S: 250 2.1.0 Ok
C: RCPT TO:<x@example.org>
S: 250 2.1.5 Ok
C: QUIT
S: 221 2.0.0 Bye
=closed

# A NUL byte or a bare CR inside a command line is refused (-ERR) and the
# session goes on.
@protocol pop3
S~ \+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@gw\.test>
C< NO\x00OP\r\n
S: -ERR NUL byte in command
C< CAPA\x00\r\n
S: -ERR NUL byte in command
C< NOOP\rX\r\n
S: -ERR Bare CR in command
C: QUIT
S: +OK popgate POP3 server signing off
=closed

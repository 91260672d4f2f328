"""Runs a command the way systemd runs a unit with StandardOutput=journal and
StandardError=journal (systemd.exec(5)): stdout and stderr are one stream
socket connected to journald's /run/systemd/journal/stdout, opened with the
stream header systemd writes (identifier, unit, default priority, level
prefix on, no forwarding), and JOURNAL_STREAM names that socket as
"DEVICE:INODE". The command is exec'd: its PID is the one journald records.

    journal_exec.py SOCKET IDENTIFIER UNIT COMMAND [ARG]...
"""
import os
import socket
import sys


def main():
    path, identifier, unit, *command = sys.argv[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    # identifier, unit id, priority (info), level_prefix, forward to syslog, kmsg, console
    s.sendall(f"{identifier}\n{unit}\n6\n1\n0\n0\n0\n".encode())
    s.shutdown(socket.SHUT_RD)
    st = os.fstat(s.fileno())
    os.dup2(s.fileno(), 1)
    os.dup2(s.fileno(), 2)
    s.close()
    os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()

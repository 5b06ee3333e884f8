"""The one time limit the tests use: a guard against a hung subprocess, not a budget. The suite takes minutes
on two quiet cores; a command that is still running after half an hour is hung (a deadlock, a pipe nobody
reads), however busy the machine. No test's outcome depends on how fast the machine is: what a test waits
for, it waits for by count or by exit, never by a deadline that races the work."""

HANG_GUARD_S = 1800

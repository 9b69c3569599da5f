//go:build !(linux || aix || solaris || darwin || dragonfly || freebsd || netbsd || openbsd || windows)

package main

// isTerminalFd reports false where terminals cannot be told apart: the
// progress of bench is then printed as plain lines.
func isTerminalFd(fd uintptr) bool { return false }

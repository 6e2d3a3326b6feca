package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux architecture Go supports (the kernel's HZ may
// differ, but it is converted for userspace).
const clockTick = 10 * time.Millisecond

// procSample is a server process' CPU time and resident memory at one
// moment, read from /proc (same host only).
type procSample struct {
	CPU   time.Duration // utime + stime
	RSSKB int64         // VmRSS
}

// readProcs samples the processes pids and returns their sums.
func readProcs(pids []int) (procSample, error) {
	var sum procSample
	for _, pid := range pids {
		s, err := readProc(pid)
		if err != nil {
			return procSample{}, err
		}
		sum.CPU += s.CPU
		sum.RSSKB += s.RSSKB
	}
	return sum, nil
}

// readProc samples process pid.
func readProc(pid int) (procSample, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procSample{}, err
	}
	cpu, err := parseStatCPU(stat)
	if err != nil {
		return procSample{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procSample{}, err
	}
	rss, err := parseStatusRSS(status)
	if err != nil {
		return procSample{}, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return procSample{CPU: cpu, RSSKB: rss}, nil
}

// parseStatCPU returns utime+stime from /proc/PID/stat. The command name
// (field 2) is in parentheses and may hold spaces, so fields are counted
// after its closing parenthesis: state is field 3, utime 14, stime 15.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("no command name")
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("too few fields")
	}
	utime, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	stime, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad utime/stime")
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// parseStatusRSS returns VmRSS in kB from /proc/PID/status.
func parseStatusRSS(status []byte) (int64, error) {
	for line := range bytes.Lines(status) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := bytes.Fields(rest)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(string(f[0]), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS")
}

// readListenOverflows returns how many times since boot this host's
// kernel found a listening socket's accept queue full (Linux's
// TcpExt ListenOverflows, machine-wide): each such connection attempt is
// dropped and the client retries only after a second or more.
func readListenOverflows() (int64, error) {
	b, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return 0, err
	}
	return parseListenOverflows(b)
}

// parseListenOverflows finds ListenOverflows in /proc/net/netstat, where
// each protocol has a line of names followed by a line of values.
func parseListenOverflows(netstat []byte) (int64, error) {
	var names [][]byte
	for line := range bytes.Lines(netstat) {
		rest, ok := bytes.CutPrefix(line, []byte("TcpExt:"))
		if !ok {
			continue
		}
		if names == nil {
			names = bytes.Fields(rest)
			continue
		}
		for i, v := range bytes.Fields(rest) {
			if i < len(names) && string(names[i]) == "ListenOverflows" {
				return strconv.ParseInt(string(v), 10, 64)
			}
		}
		break
	}
	return 0, fmt.Errorf("no TcpExt ListenOverflows")
}

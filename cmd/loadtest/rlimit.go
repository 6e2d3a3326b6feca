package main

import (
	"fmt"
	"syscall"
)

// raiseFileLimit makes sure the process may open need descriptors: one per
// listener and publisher connection, plus a margin. Go already raises the
// soft limit to the hard one at start; this says clearly, before anything
// connects, when even the hard limit is too low, instead of failing
// midway with "too many open files".
func raiseFileLimit(need uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil // not knowable here: let the connections tell
	}
	if lim.Cur >= need {
		return nil
	}
	if lim.Max >= need {
		lim.Cur = need
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
			return nil
		}
	}
	return fmt.Errorf("this run needs about %d open files and the limit is %d (hard %d): raise it, e.g. ulimit -n %d",
		need, lim.Cur, lim.Max, need)
}

// descriptorsNeeded estimates the descriptors of a run.
func (c config) descriptorsNeeded() uint64 {
	return uint64(c.Listeners+c.Stall) + 2*uint64(c.Publishers) + 64
}

//go:build unix

package connlimit

import "syscall"

// DescriptorLimit is the process's current limit on open files. The Go
// runtime has already raised the soft limit to the hard one at start-up.
func DescriptorLimit() (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	return r.Cur, nil
}

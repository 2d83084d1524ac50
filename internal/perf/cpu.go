package perf

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gonomaly/gonomaly/internal/bench"
)

// pidCPU is a live process's user and system CPU time from /proc/PID/stat (fields 14
// and 15, in USER_HZ ticks, 100 a second on Linux); 0 when unreadable.
func pidCPU(pid int) time.Duration {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) is in parentheses and may hold spaces: count from after it.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(utime+stime) * (time.Second / 100)
}

// children tracks the pids of the child processes a run started.
type children struct {
	mu   sync.Mutex
	pids []int
}

func (c *children) add(pid int) {
	c.mu.Lock()
	c.pids = append(c.pids, pid)
	c.mu.Unlock()
}

// cpu is the CPU time of this process and its live children.
func (c *children) cpu() time.Duration {
	t := bench.ProcessCPU()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, pid := range c.pids {
		t += pidCPU(pid)
	}
	return t
}

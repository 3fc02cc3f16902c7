package pipeline

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Resources is a stage's optional `resources:` block: what a cluster executor requests for
// each instance of the stage (Slurm: --cpus-per-task, --mem, --gres=gpu:N, --time). It
// enters no cache key (the same params on more CPUs give the same bytes) and local runs
// ignore it. A zero field means "the cluster's default".
//
//	resources: {cpus: 4, mem: 8G, gpus: 1, time: "2:00:00"}
type Resources struct {
	// CPUs is the number of CPUs of the one task a job runs.
	CPUs int
	// MemMB is the memory in megabytes (mem: 512, 512M, 8G, 1T; K rounds up to 1M).
	MemMB int64
	// GPUs is the number of GPUs.
	GPUs int
	// Time is the wall-clock limit (time: minutes as an integer, Slurm's "MM:SS",
	// "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS", or a Go duration such as "90m").
	Time time.Duration
}

var (
	memRE   = regexp.MustCompile(`^([0-9]+)\s*([KMGT]?)B?$`)
	slurmTi = regexp.MustCompile(`^(?:([0-9]{1,3})-)?([0-9]{1,6})(?::([0-9]{1,6}))?(?::([0-9]{1,6}))?$`)
)

// parseResources parses a `resources:` mapping strictly: unknown fields, non-positive and
// malformed values are errors naming the line and field.
func parseResources(n *yaml.Node, lines map[string]int, errf func(line int, field, format string, a ...any) error) (*Resources, error) {
	if n.Kind != yaml.MappingNode {
		return nil, errf(n.Line, "resources", "want a mapping {cpus, mem, gpus, time}")
	}
	r := &Resources{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		field := "resources." + k.Value
		lines[field] = k.Line
		if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
			return nil, errf(v.Line, field, "want a value, got %s", nodeText(v))
		}
		var err error
		switch k.Value {
		case "cpus":
			r.CPUs, err = positiveInt(v.Value)
		case "gpus":
			r.GPUs, err = positiveInt(v.Value)
		case "mem":
			r.MemMB, err = parseMem(v.Value)
		case "time":
			r.Time, err = parseTime(v.Value)
		default:
			return nil, errf(k.Line, field, "unknown resource (want cpus, mem, gpus, time)")
		}
		if err != nil {
			return nil, errf(v.Line, field, "%v", err)
		}
	}
	return r, nil
}

func nodeText(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return "nothing"
}

func positiveInt(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("want a positive integer, got %q", s)
	}
	return n, nil
}

// parseMem reads megabytes, or a number with a K, M, G or T suffix (Slurm's units, powers of
// 1024).
func parseMem(s string) (int64, error) {
	m := memRE.FindStringSubmatch(strings.ToUpper(strings.TrimSpace(s)))
	bad := fmt.Errorf("want megabytes or a size such as 512M, 8G or 1T, got %q", s)
	if m == nil {
		return 0, bad
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil || n < 1 {
		return 0, bad
	}
	shift := map[string]int{"K": -10, "": 0, "M": 0, "G": 10, "T": 20}[m[2]]
	if shift < 0 {
		return (n + 1023) / 1024, nil
	}
	if n > (1<<40)>>shift {
		return 0, fmt.Errorf("%q is more memory than any machine has", s)
	}
	return n << shift, nil
}

// parseTime reads a wall-clock limit: minutes, Slurm's forms, or a Go duration.
func parseTime(s string) (time.Duration, error) {
	bad := fmt.Errorf(`want minutes, "HH:MM:SS", "D-HH:MM" or a duration such as "90m", got %q`, s)
	var d time.Duration
	if m := slurmTi.FindStringSubmatch(s); m != nil {
		num := func(x string) time.Duration {
			n, _ := strconv.Atoi(x) // the regexp admits digits only; "" is 0
			return time.Duration(n)
		}
		switch {
		case m[1] != "": // D-HH, D-HH:MM, D-HH:MM:SS
			d = num(m[1])*24*time.Hour + num(m[2])*time.Hour + num(m[3])*time.Minute + num(m[4])*time.Second
		case m[4] != "": // HH:MM:SS
			d = num(m[2])*time.Hour + num(m[3])*time.Minute + num(m[4])*time.Second
		case m[3] != "": // MM:SS
			d = num(m[2])*time.Minute + num(m[3])*time.Second
		default: // minutes
			d = num(m[2]) * time.Minute
		}
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, bad
		}
	}
	if d <= 0 || d > 365*24*time.Hour {
		return 0, fmt.Errorf("want a limit between 1 s and a year, got %q", s)
	}
	return d, nil
}

package hadg_test

import (
	"fmt"
	"math/rand/v2"

	"github.com/pipe-ahl/pipe/ahl/hadg"
)

// Build with six normals in two clusters, two seen anomalies, two generators and T = 3: task 0
// is holistic, tasks 1 and 2 are the pairs (0, 1) and (1, 0) in a seeded order.
func ExampleBuild() {
	in := hadg.Input{
		Normals:    []string{"n0", "n1", "n2", "n3", "n4", "n5"},
		Clusters:   []int{0, 0, 0, 1, 1, 1},
		Anomalies:  []string{"a0", "a1"},
		Generators: []string{"cutpaste", "draem"},
		Tasks:      3,
	}
	samples, report, err := hadg.Build(in, rand.New(rand.NewPCG(1, 0)))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, line := range report.Lines() {
		fmt.Println(line)
	}
	for _, s := range samples {
		if s.Task == 1 {
			fmt.Printf("%s %s label %d %s\n", s.Role, s.ID, s.Label, s.Kind)
		}
	}
	// Output:
	// 2 clusters (0: 3 normals; 1: 3 normals), 2 ordered pairs, 0 unclustered normals
	// task 0 holistic: support {Normal:1 Seen:1 Unseen:0 Pseudo:2} gen "draem"; query {Normal:1 Seen:1 Unseen:1 Pseudo:2} gen "cutpaste"
	// task 1 pair 0->1: support {Normal:2 Seen:1 Unseen:0 Pseudo:1} gen "cutpaste"; query {Normal:0 Seen:1 Unseen:1 Pseudo:3} gen "draem"
	// task 2 pair 1->0: support {Normal:1 Seen:1 Unseen:0 Pseudo:2} gen "cutpaste"; query {Normal:2 Seen:1 Unseen:1 Pseudo:1} gen "draem"
	// support n0 label 0 normal
	// support n1 label 0 normal
	// support n2#cutpaste label 2 pseudo
	// support a0 label 1 seen
	// query n3#draem label 2 pseudo
	// query n4#draem label 2 pseudo
	// query n5#draem label 2 pseudo
	// query a0 label 1 seen
	// query a1 label 1 unseen
}

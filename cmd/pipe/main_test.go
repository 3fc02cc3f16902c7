package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	_ "github.com/pipe-ahl/pipe/cmd/pipe/internal/testkinds"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"pipe": func() { os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr)) },
	})
}

// TestScripts runs testdata/script/*.txtar. Every `pipe` is a real subprocess (the test
// binary), so store locking and SIGKILL behave as in use. Scripts see $PIPE_STORE (a fresh
// store) and $PIPE_TEST_LOG (the tcount execution log), plus two commands:
//
//	waitfile PATH        wait (up to 60 s) until PATH exists
//	pipecode N ARGS...   run pipe ARGS, expect exit code N; its stdout/stderr can be matched
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			env.Setenv("PIPE_STORE", filepath.Join(env.WorkDir, "store"))
			env.Setenv("PIPE_TEST_LOG", filepath.Join(env.WorkDir, "exec.log"))
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"waitfile": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 1 || neg {
					ts.Fatalf("usage: waitfile PATH")
				}
				deadline := time.Now().Add(60 * time.Second)
				for {
					if _, err := os.Stat(ts.MkAbs(args[0])); err == nil {
						return
					}
					if time.Now().After(deadline) {
						ts.Fatalf("waitfile: %s did not appear within 60s", args[0])
					}
					time.Sleep(20 * time.Millisecond)
				}
			},
			"pipecode": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) < 1 || neg {
					ts.Fatalf("usage: pipecode N ARGS...")
				}
				want, err := strconv.Atoi(args[0])
				ts.Check(err)
				bin, err := exec.LookPath("pipe")
				ts.Check(err)
				cmd := exec.Command(bin, args[1:]...)
				cmd.Dir = ts.MkAbs(".")
				cmd.Env = append(os.Environ(), "PIPE_STORE="+ts.Getenv("PIPE_STORE"), "PIPE_TEST_LOG="+ts.Getenv("PIPE_TEST_LOG"))
				cmd.Stdout, cmd.Stderr = ts.Stdout(), ts.Stderr()
				err = cmd.Run()
				got := 0
				if ee, ok := err.(*exec.ExitError); ok {
					got = ee.ExitCode()
				} else if err != nil {
					ts.Fatalf("pipecode: %v", err)
				}
				if got != want {
					ts.Fatalf("pipe %v: exit code %d, want %d", args[1:], got, want)
				}
				fmt.Fprint(ts.Stderr(), "")
			},
		},
	})
}

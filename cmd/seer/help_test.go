package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func allCommands(c *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{c}
	for _, s := range c.Commands() {
		out = append(out, allCommands(s)...)
	}
	return out
}

func TestEveryCommandHasHelp(t *testing.T) {
	root := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
	cmds := allCommands(root)
	if len(cmds) < 7 {
		t.Fatalf("found %d commands, want seer and its subcommands", len(cmds))
	}
	for _, c := range cmds {
		if strings.TrimSpace(c.Short) == "" || len(strings.TrimSpace(c.Long)) < 80 {
			t.Errorf("%q: --help needs a Short line and a Long explanation", c.CommandPath())
		}
		var out bytes.Buffer
		r := newRootCmd(&out, &out)
		r.SetArgs(append(strings.Fields(strings.TrimPrefix(c.CommandPath(), "seer")), "--help"))
		if err := r.Execute(); err != nil {
			t.Errorf("%s --help: %v", c.CommandPath(), err)
		}
		firstLine, _, _ := strings.Cut(c.Long, "\n")
		if !strings.Contains(out.String(), firstLine) {
			t.Errorf("%s --help does not print its description:\n%s", c.CommandPath(), out.String())
		}
	}
}

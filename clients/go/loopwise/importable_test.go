package loopwise

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// goCommand runs a go command in dir with extra environment and fails the test on error.
func goCommand(t *testing.T, dir string, env []string, args ...string) {
	t.Helper()
	command := exec.Command("go", args...)
	command.Dir = dir
	command.Env = append(os.Environ(), env...)
	if out, err := command.CombinedOutput(); err != nil {
		t.Fatalf("go %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
	}
}

// The programs of this module that use the package compile (go vet type-checks them),
// and the example builds as a program of another module that requires this one by its
// path (here replaced by the checkout, as a go.work or a tagged version would provide it).
func TestTheModuleIsImportableByItsPath(t *testing.T) {
	moduleDir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	goCommand(t, moduleDir, nil, "vet", "./examples/...", "./cmd/...")

	app := t.TempDir()
	goMod := "module example.com/backend\n\ngo 1.24\n\n" +
		"require github.com/loopwise/loopwise/clients/go v0.0.0\n\n" +
		"replace github.com/loopwise/loopwise/clients/go => " + moduleDir + "\n"
	source, err := os.ReadFile(filepath.Join(moduleDir, "examples", "decide", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	sum, err := os.ReadFile(filepath.Join(moduleDir, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"go.mod": []byte(goMod), "go.sum": sum, "main.go": source} {
		if err := os.WriteFile(filepath.Join(app, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Only the module cache: the dependencies are those of this module, already there.
	goCommand(t, app, []string{"GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off"}, "build", "-o", filepath.Join(out, "backend"), ".")
	if _, err := os.Stat(filepath.Join(out, "backend")); err != nil {
		t.Fatal(err)
	}
}

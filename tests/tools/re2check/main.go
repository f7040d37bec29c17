// re2check is the judge the DLP-dialect property test asks: does Go's regexp (RE2, the engine
// of pipelock and gitleaks) compile a pattern, and which strings does it match the way
// pipelock matches DLP patterns (case-insensitively, "(?i)" prefixed unless already there)?
//
// One JSON request per stdin line: {"re": "...", "corpus": ["...", ...]}.
// One JSON answer per stdout line: {"ok": true, "matches": [true, ...]} or {"ok": false, "err": "..."}.
package main

import (
	"bufio"
	"encoding/json"
	"os"
	"regexp"
	"strings"
)

type request struct {
	Re     string   `json:"re"`
	Corpus []string `json:"corpus"`
}

type answer struct {
	Ok      bool   `json:"ok"`
	Err     string `json:"err,omitempty"`
	Matches []bool `json:"matches,omitempty"`
}

func judge(r request) answer {
	// pipelock validates the pattern as written (internal/config/validate.go) ...
	if _, err := regexp.Compile(r.Re); err != nil {
		return answer{Err: err.Error()}
	}
	// ... and matches it with "(?i)" in front (internal/scanner/scanner.go, New).
	p := r.Re
	if !strings.HasPrefix(p, "(?i)") {
		p = "(?i)" + p
	}
	re, err := regexp.Compile(p)
	if err != nil {
		return answer{Err: "with (?i): " + err.Error()}
	}
	m := make([]bool, len(r.Corpus))
	for i, s := range r.Corpus {
		m[i] = re.MatchString(s)
	}
	return answer{Ok: true, Matches: m}
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var r request
		if err := json.Unmarshal(in.Bytes(), &r); err != nil {
			_ = out.Encode(answer{Err: "bad request: " + err.Error()})
			continue
		}
		_ = out.Encode(judge(r))
	}
}

// Command gen regenerates tests/golden/schematics.json: a golden corpus of
// Image Factory schematic canonical forms and IDs produced by the real
// go-yaml library (gopkg.in/yaml.v3 v3.0.1, as packaged by Debian).
//
// The structs below mirror the upstream schematic model (field order and
// yaml tags are significant: they define the canonical serialisation order).
// Decoding uses yaml.v3 Decoder with KnownFields(true) (first document only),
// the canonical form is yaml.Marshal of the decoded struct, and the ID is the
// lowercase hex SHA-256 of those bytes.
//
// Regenerate (from the repository root):
//
//	cd tests/golden/gen && GO111MODULE=off GOPATH=/usr/share/gocode go run gen.go cases.go > ../schematics.json
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// ---------------------------------------------------------------------------
// Schematic model (mirrors spec §2.1).

type Schematic struct {
	Owner         string        `yaml:"owner,omitempty"`
	Overlay       Overlay       `yaml:"overlay,omitempty"`
	Customization Customization `yaml:"customization"`
}

type Overlay struct {
	Image   string         `yaml:"image"`
	Name    string         `yaml:"name"`
	Options map[string]any `yaml:"options,omitempty"`
}

type Customization struct {
	EmbeddedMachineConfiguration string                  `yaml:"embeddedMachineConfiguration,omitempty"`
	ExtraKernelArgs              []string                `yaml:"extraKernelArgs,omitempty"`
	Meta                         []MetaValue             `yaml:"meta,omitempty"`
	SystemExtensions             SystemExtensions        `yaml:"systemExtensions,omitempty"`
	Bootloader                   BootloaderKind          `yaml:"bootloader,omitempty"`
	SecureBoot                   SecureBootCustomization `yaml:"secureboot,omitempty"`
	DiskImage                    DiskImage               `yaml:"diskImage,omitempty"`
}

type MetaValue struct {
	Key   uint8  `yaml:"key"`
	Value string `yaml:"value"`
}

type SystemExtensions struct {
	OfficialExtensions []string `yaml:"officialExtensions,omitempty"`
}

type SecureBootCustomization struct {
	EnrollKeys                   string `yaml:"enrollKeys,omitempty"`
	IncludeWellKnownCertificates bool   `yaml:"includeWellKnownCertificates,omitempty"`
}

type DiskImage struct {
	SectorSize uint `yaml:"sectorSize,omitempty"`
}

// BootloaderKind mirrors Talos' enumer-generated (-linecomment -text) enum:
// an int whose zero value "none" is omitted by omitempty, with text
// (un)marshalling; parsing tries the exact name, then strings.ToLower(name).
type BootloaderKind int

const (
	BootLoaderKindNone BootloaderKind = iota
	BootLoaderKindDualBoot
	BootLoaderKindSDBoot
	BootLoaderKindGrub
)

var bootloaderNames = []string{"none", "dual-boot", "sd-boot", "grub"}

func (i BootloaderKind) String() string {
	if i < 0 || int(i) >= len(bootloaderNames) {
		return fmt.Sprintf("BootloaderKind(%d)", int(i))
	}
	return bootloaderNames[i]
}

func BootloaderKindString(s string) (BootloaderKind, error) {
	for i, n := range bootloaderNames {
		if n == s {
			return BootloaderKind(i), nil
		}
	}
	for i, n := range bootloaderNames {
		if n == strings.ToLower(s) {
			return BootloaderKind(i), nil
		}
	}
	return 0, fmt.Errorf("%s does not belong to BootloaderKind values", s)
}

func (i BootloaderKind) MarshalText() ([]byte, error) { return []byte(i.String()), nil }

func (i *BootloaderKind) UnmarshalText(text []byte) error {
	var err error
	*i, err = BootloaderKindString(string(text))
	return err
}

// ---------------------------------------------------------------------------
// Corpus plumbing.

type testCase struct {
	name  string
	input string
	note  string
	// v3only forces v3_only (in addition to the automatic detection).
	v3only bool
}

type result struct {
	Name      string  `json:"name"`
	Input     string  `json:"input"`
	Canonical *string `json:"canonical"`
	ID        *string `json:"id"`
	Error     *string `json:"error"`
	V3Only    bool    `json:"v3_only"`
	Note      string  `json:"note"`
}

const ownerError = "owner field is only supported in Enterprise edition"

func run(c testCase) result {
	r := result{Name: c.name, Input: c.input}
	notes := []string{}
	if c.note != "" {
		notes = append(notes, c.note)
	}
	v3only := c.v3only

	dec := yaml.NewDecoder(bytes.NewReader([]byte(c.input)))
	dec.KnownFields(true)
	var s Schematic
	err := dec.Decode(&s)
	switch {
	case err != nil:
		msg := err.Error()
		r.Error = &msg
		v3only = true
		notes = append(notes, "error text is gopkg.in/yaml.v3 wording with Go type names from package main; factory v1.5.0 (yaml v4) words errors differently (e.g. 'yaml: construct errors: line N: field X not found in type schematic.Schematic', 'cannot construct' instead of 'cannot unmarshal', TextUnmarshaler errors wrapped with a line number)")
	case s.Owner != "":
		msg := ownerError
		r.Error = &msg
		notes = append(notes, "decodes fine with go-yaml; rejected afterwards by the community factory's owner rule (HTTP 400, text from spec §1.2, not a go-yaml error)")
	default:
		out, merr := yaml.Marshal(&s)
		if merr != nil {
			msg := "marshal: " + merr.Error()
			r.Error = &msg
			break
		}
		canon := string(out)
		sum := sha256.Sum256(out)
		id := hex.EncodeToString(sum[:])
		r.Canonical = &canon
		r.ID = &id
		for _, h := range hazards(&s, c.input) {
			if h.v3only {
				v3only = true
			}
			notes = append(notes, h.msg)
		}
	}
	r.V3Only = v3only
	r.Note = strings.Join(dedup(notes), "; ")
	return r
}

func dedup(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// Automatic detection of the yaml.v3 vs factory v1.5.0 differences listed in
// spec §2.2, §2.3.3, §2.3.4 and §2.6.

func isOldBool(s string) bool {
	switch s {
	case "y", "Y", "yes", "Yes", "YES", "on", "On", "ON",
		"n", "N", "no", "No", "NO", "off", "Off", "OFF":
		return true
	}
	return false
}

var base60 = regexp.MustCompile(`^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`)

func isBase60(s string) bool {
	// Same expression as yaml.v3 encode.go.
	if s == "" {
		return false
	}
	c := s[0]
	if !(c == '+' || c == '-' || c >= '0' && c <= '9') || !strings.Contains(s, ":") {
		return false
	}
	return base60.MatchString(s)
}

// v3Style reports how yaml.v3 emits s as a block-context mapping value.
func v3Style(s string) string {
	out, err := yaml.Marshal(struct {
		K string `yaml:"k"`
	}{s})
	if err != nil {
		return "error"
	}
	o := string(out)
	switch {
	case strings.HasPrefix(o, "k: |"):
		return "literal"
	case strings.HasPrefix(o, "k: \""):
		return "double"
	case strings.HasPrefix(o, "k: '"):
		return "single"
	}
	return "plain"
}

func isBreakRune(r rune) bool {
	return r == '\n' || r == '\r' || r == 0x85 || r == 0x2028 || r == 0x2029
}

// hazard is one observation about a case. v3only hazards are the documented
// differences between yaml.v3 and factory v1.5.0; the others are informational.
type hazard struct {
	msg    string
	v3only bool
}

func hasAstral(s string) bool {
	for _, r := range s {
		if r > 0xFFFF {
			return true
		}
	}
	return false
}

func stringHazards(s string, isKey bool) []hazard {
	var h []hazard
	if isOldBool(s) {
		h = append(h, hazard{fmt.Sprintf("%q is a YAML-1.1 bool word: yaml.v3 double-quotes it, factory v1.5.0 single-quotes it", s), true})
	}
	if isBase60(s) {
		h = append(h, hazard{fmt.Sprintf("%q is a YAML-1.1 base-60 number: yaml.v3 double-quotes it, factory v1.5.0 single-quotes it", s), true})
	}
	if s == "<<" {
		h = append(h, hazard{"\"<<\": yaml.v3 emits it plain (its resolver never sees '<' as special when encoding), factory v1.5.0 single-quotes it (spec says <= v1.4.0 double-quoted)", true})
	}
	if strings.ContainsRune(s, 0x85) {
		h = append(h, hazard{"U+0085 (NEL) is non-printable for the go-yaml emitter (yaml.v3, and the same isPrintable in yaml v4 source), so the string is double-quoted with \\N; spec §2.3.3 lists U+0085 as printable", false})
	}
	if hasAstral(s) {
		h = append(h, hazard{"characters above U+FFFF are non-printable for the go-yaml emitter (yaml.v3, and the same isPrintable in yaml v4 source), so the string is double-quoted with \\UXXXXXXXX escapes; spec §2.3.3 lists U+10000-U+10FFFF as printable", false})
	}
	if (strings.ContainsRune(s, 0x2028) || strings.ContainsRune(s, 0x2029)) && !isKey {
		h = append(h, hazard{"U+2028/U+2029 are printable line breaks for the emitter: the separator is written raw and followed by a newline-less indentation run (in single-quoted style when the string has no \\n, inside the literal block otherwise); the output re-reads to the same string", false})
	}
	if isKey {
		return h
	}
	if strings.Contains(s, "\n") && v3Style(s) == "literal" {
		if len(s) < 2 || strings.TrimSpace(s) == "" {
			h = append(h, hazard{fmt.Sprintf("whitespace-only (or 1-char) multi-line string %q: yaml.v3 emits a literal block, factory >= v0.9.0 emits it double-quoted", s), true})
		} else if r := []rune(s)[0]; isBreakRune(r) {
			h = append(h, hazard{fmt.Sprintf("literal block whose text starts with a line break (%q): yaml.v3 adds indentation indicator 4, factory >= v1.1.0 does not", s), true})
		}
	}
	return h
}

func walkValue(v any, f func(s string, isKey bool)) {
	switch t := v.(type) {
	case string:
		f(t, false)
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			f(k, true)
			walkValue(t[k], f)
		}
	case map[any]any:
		keys := make([]any, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
		for _, k := range keys {
			if ks, ok := k.(string); ok {
				f(ks, true)
			}
			walkValue(t[k], f)
		}
	case []any:
		for _, e := range t {
			walkValue(e, f)
		}
	}
}

func hazards(s *Schematic, input string) []hazard {
	var h []hazard
	add := func(str string, isKey bool) { h = append(h, stringHazards(str, isKey)...) }
	add(s.Overlay.Image, false)
	add(s.Overlay.Name, false)
	walkValue(map[string]any(s.Overlay.Options), add)
	c := s.Customization
	add(c.EmbeddedMachineConfiguration, false)
	for _, a := range c.ExtraKernelArgs {
		add(a, false)
	}
	for _, m := range c.Meta {
		add(m.Value, false)
	}
	for _, e := range c.SystemExtensions.OfficialExtensions {
		add(e, false)
	}
	add(c.SecureBoot.EnrollKeys, false)

	// Timestamps: plain date-like scalars in the first document.
	var doc yaml.Node
	d := yaml.NewDecoder(strings.NewReader(input))
	if err := d.Decode(&doc); err == nil {
		var walk func(n *yaml.Node, inOptions bool, path string)
		walk = func(n *yaml.Node, inOptions bool, path string) {
			if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!timestamp" {
				if inOptions {
					h = append(h, hazard{fmt.Sprintf("timestamp-like plain scalar %q inside overlay.options: yaml.v3 v3.0.1 decodes it into a time.Time and re-emits it in RFC 3339 (Nano) form, i.e. what spec §2.6 describes for factory v1.5.0; spec §2.6's claim that v3 kept it as a string does not hold for this library version, so the case is not marked v3_only", n.Value), false})
				} else {
					h = append(h, hazard{fmt.Sprintf("date-like plain scalar %q in a typed string field: accepted as a string by yaml.v3, rejected by factory v1.5.0 (timestamp cannot be constructed into a string, HTTP 400)", n.Value), true})
				}
			}
			for i, ch := range n.Content {
				opt := inOptions
				p := path
				if n.Kind == yaml.MappingNode && i%2 == 1 {
					p = path + "/" + n.Content[i-1].Value
					if p == "/overlay/options" {
						opt = true
					}
				}
				walk(ch, opt, p)
			}
		}
		if len(doc.Content) == 1 {
			walk(doc.Content[0], false, "")
		}
	}
	return h
}

// ---------------------------------------------------------------------------
// Main.

func main() {
	cases := allCases()
	seen := map[string]bool{}
	results := make([]result, 0, len(cases))
	for _, c := range cases {
		if seen[c.name] {
			fmt.Fprintf(os.Stderr, "duplicate case name %q\n", c.name)
			os.Exit(1)
		}
		seen[c.name] = true
		results = append(results, run(c))
	}

	// Self-check against spec §2.5.
	want := map[string]string{
		"spec_01_empty_customization":   "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba",
		"spec_02_kernel_args":           "9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c",
		"spec_03_kernel_args_nomodeset": "e0fb1129bbbdfb5d002e94af4cdce712a8370e850950a33a242d4c3f178c532d",
		"spec_04_meta":                  "d308a2a5ee2277bed5fbaa104fcbc8d59122abfa737df987a95b4ca763459a7f",
		"spec_05_meta_json_value":       "fe866116408a5a13dab7d5003eb57a00954ea81ebeec3fbbcd1a6d4462a00036",
		"spec_06_secureboot_wellknown":  "fa8e05f142a851d3ee568eb0a8e5841eaf6b0ebc8df9a63df16ac5ed2c04f3e6",
		"spec_07_sector_size":           "92833e9ddd9bb9e11b2464fa5525429f01866306d52ebd882ee08d7918f6d1ea",
		"spec_08_bootloader_grub":       "39d496b2cbdb6265d3b714514c5334bf010f1b4d31b23b9e38c80fb2f3ad7ecb",
		"spec_09_bootloader_sdboot":     "9ed5fecdacb36b5c5427b87d409f1065cfb2df69b0f71c58b868d9d466d8dab3",
		"spec_10_extensions_unsorted":   "51ff3e49313773332729a5c04e57af0dbe2e6d3f65ff638e6d4c3a05065fefff",
		"spec_11_overlay_rpi_generic":   "ee21ef4a5ef808a9b7484cc0dda0f25075021691c8c09a276591eedb638ea1f9",
		"spec_docs_vga791":              "eea1f9534c46d95c4715a2f13d17eacb927c13a42ef087c79b22c3bd0c49d073",
	}
	for _, r := range results {
		w, ok := want[r.Name]
		if !ok {
			continue
		}
		if r.ID == nil || *r.ID != w {
			got := "<nil>"
			if r.ID != nil {
				got = *r.ID
			}
			fmt.Fprintf(os.Stderr, "spec check FAILED for %s: got %s want %s\n", r.Name, got, w)
			os.Exit(1)
		}
		delete(want, r.Name)
	}
	if len(want) != 0 {
		fmt.Fprintf(os.Stderr, "spec check cases missing: %v\n", want)
		os.Exit(1)
	}

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(results); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Stdout.Write(buf.Bytes())

	nv3 := 0
	nerr := 0
	for _, r := range results {
		if r.V3Only {
			nv3++
		}
		if r.Error != nil {
			nerr++
		}
	}
	fmt.Fprintf(os.Stderr, "%d cases, %d v3_only, %d errors\n", len(results), nv3, nerr)
}

// kvfit-chat-go: the Go twin of samples/chat.c, a command-line chat that
// streams tokens as the model produces them.
//
//	kvfit-chat-go -m model.gguf [-s SYSTEM] [-p PROMPT] [--temp T] [--top-k K]
//	              [--top-p P] [--min-p P] [--repeat-penalty R] [--seed N] [-t THREADS]
//	              [-c N_CTX] [-n MAX_TOKENS] [--template NAME] [--budget 64MiB] [--plan] [-v]
//
// Each turn renders the whole conversation with the chat template and feeds
// the session only the part it has not seen, so earlier turns are never
// recomputed. With --budget the session streams inside a fixed KV memory.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"kvfit"
)

// byteSize is a flag.Value reading "64MiB", "512K", "1.5GiB" or plain bytes
// (K/M/G are 1024-based), as the C tools do.
type byteSize uint64

func (b *byteSize) String() string { return strconv.FormatUint(uint64(*b), 10) }

func (b *byteSize) Set(s string) error {
	units := []struct {
		suffix string
		scale  float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}}
	number, scale := s, 1.0
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			number, scale = strings.TrimSuffix(s, u.suffix), u.scale
			break
		}
	}
	// Digits with at most one point, and a fraction only with a unit.
	valid := number != "" && strings.Trim(number, "0123456789.") == "" && strings.Count(number, ".") <= 1 &&
		number[0] != '.' && number[len(number)-1] != '.' && (scale > 1 || !strings.Contains(number, "."))
	v, err := strconv.ParseFloat(number, 64)
	if !valid || err != nil || v*scale < 1 || v*scale > 1<<62 {
		return fmt.Errorf("bad size %q", s)
	}
	*b = byteSize(v * scale)
	return nil
}

// shortest gives a float32 default as flag prints it best (0.95, not 0.949999988).
func shortest(v float32) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(float64(v), 'g', -1, 32), 64)
	return f
}

func printPlan(s *kvfit.Session) error {
	plan, err := s.Plan()
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "plan: %d layers, %.2f MiB of KV state\n", len(plan.Layers), float64(plan.TotalBytes)/1048576)
	for first := 0; first < len(plan.Layers); {
		l := plan.Layers[first]
		last := first
		for last+1 < len(plan.Layers) && plan.Layers[last+1].Codec == l.Codec &&
			plan.Layers[last+1].Window == l.Window && plan.Layers[last+1].Sinks == l.Sinks {
			last++
		}
		fmt.Fprintf(os.Stderr, "  layers %d-%d: %s, %s, %d sinks + %d window, %.2f MiB each\n",
			first, last, l.Kind, l.Codec, l.Sinks, l.Window, float64(l.Bytes)/1048576)
		first = last + 1
	}
	return nil
}

func main() {
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: kvfit-chat-go -m MODEL.gguf [options]\n"+
			"Without -p it reads one user message per line from stdin until EOF.")
		flag.PrintDefaults()
	}
	samplerOpts := kvfit.DefaultSamplerOptions()
	sessionOpts := kvfit.DefaultSessionOptions()
	var budget byteSize
	modelPath := flag.String("m", "", "GGUF model file")
	system := flag.String("s", "", "system prompt")
	prompt := flag.String("p", "", "one-shot prompt (else read lines from stdin)")
	template := flag.String("template", "", "chat template: chatml, llama3, llama2, gemma (default: the model's)")
	temp := flag.Float64("temp", 0.7, "temperature (<= 0: greedy)")
	topK := flag.Int("top-k", int(samplerOpts.TopK), "top-k (<= 0: off)")
	topP := flag.Float64("top-p", shortest(samplerOpts.TopP), "top-p (>= 1: off)")
	minP := flag.Float64("min-p", shortest(samplerOpts.MinP), "min-p (<= 0: off)")
	repeatPenalty := flag.Float64("repeat-penalty", 1.1, "repetition penalty (1: off)")
	seed := flag.Uint64("seed", 0, "sampling seed")
	threads := flag.Int("t", 0, "CPU threads (0: all cores)")
	ctx := flag.Uint("c", 4096, "context the session holds or aims to cover")
	maxTokens := flag.Uint("n", 512, "maximum tokens per reply")
	flag.Var(&budget, "budget", "fixed KV budget, e.g. 64MiB (streaming session)")
	showPlan := flag.Bool("plan", false, "print the session's plan")
	verbose := flag.Bool("v", false, "print kvfit's log")
	flag.Parse()
	if *modelPath == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	samplerOpts.Temperature, samplerOpts.TopK = float32(*temp), int32(*topK)
	samplerOpts.TopP, samplerOpts.MinP = float32(*topP), float32(*minP)
	samplerOpts.RepeatPenalty, samplerOpts.Seed = float32(*repeatPenalty), *seed
	sessionOpts.Threads, sessionOpts.Context, sessionOpts.KVBudgetBytes = int32(*threads), uint32(*ctx), uint64(budget)
	genOpts := kvfit.DefaultGenerateOptions()
	genOpts.MaxTokens = uint32(*maxTokens)
	if *verbose {
		kvfit.SetLogCallback(kvfit.LogInfo, func(_ kvfit.LogLevel, msg string) { fmt.Fprintln(os.Stderr, "[kvfit]", msg) })
	}
	if err := chat(*modelPath, *system, *prompt, *template, &sessionOpts, &samplerOpts, &genOpts, *showPlan); err != nil {
		fmt.Fprintln(os.Stderr, "kvfit-chat-go:", err)
		os.Exit(1)
	}
}

func chat(modelPath, system, prompt, template string, sessionOpts *kvfit.SessionOptions,
	samplerOpts *kvfit.SamplerOptions, genOpts *kvfit.GenerateOptions, showPlan bool) error {
	model, err := kvfit.LoadModel(modelPath, nil)
	if err != nil {
		return err
	}
	defer model.Close()
	session, err := model.NewSession(sessionOpts)
	if err != nil {
		return err
	}
	defer session.Close()
	sampler, err := kvfit.NewSampler(samplerOpts)
	if err != nil {
		return err
	}
	defer sampler.Close()
	if showPlan {
		if err := printPlan(session); err != nil {
			return err
		}
	}
	if template == "" {
		template = model.ChatTemplate()
	}
	if prompt == "" {
		fmt.Fprintf(os.Stderr, "kvfit %s, template %s. Type a message, Ctrl-D to quit.\n", kvfit.Version(), template)
	}

	var base []kvfit.ChatMessage
	if system != "" {
		base = append(base, kvfit.ChatMessage{Role: "system", Content: system})
	}
	history := append([]kvfit.ChatMessage(nil), base...)
	seen := 0 // bytes of the rendered conversation already in the session
	lines := bufio.NewScanner(os.Stdin)
	for {
		user := prompt
		if prompt == "" {
			fmt.Fprint(os.Stderr, "> ")
			if !lines.Scan() {
				return lines.Err()
			}
			if user = lines.Text(); strings.TrimSpace(user) == "" {
				continue
			}
		}
		history = append(history, kvfit.ChatMessage{Role: "user", Content: user})
		text, err := model.ApplyChatTemplate(template, history, true)
		if err != nil {
			return err
		}
		// If the template re-rendered an earlier turn differently, start the session over.
		if seen > len(text) {
			if err := session.Reset(); err != nil {
				return err
			}
			seen = 0
		}
		tokens, err := model.Tokenize(text[seen:], seen == 0, true)
		if err != nil {
			return err
		}
		var reply strings.Builder
		res, err := session.Generate(tokens, sampler, genOpts, func(_ kvfit.Token, piece string) bool {
			reply.WriteString(piece)
			fmt.Print(piece)
			return true
		})
		if err != nil && !errors.Is(err, kvfit.ErrContextFull) {
			return err
		}
		fmt.Println()
		if err != nil || res.StopReason == kvfit.StopContextFull {
			fmt.Fprintln(os.Stderr, "[context full: starting a new conversation]")
			if err := session.Reset(); err != nil {
				return err
			}
			history = append(history[:0], base...)
			seen = 0
		} else {
			seen = len(text) + reply.Len()
			history = append(history, kvfit.ChatMessage{Role: "assistant", Content: reply.String()})
		}
		if prompt != "" {
			return nil
		}
	}
}

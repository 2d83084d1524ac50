package main

import "context"

// cmdEval dispatches `gonomaly eval odds` and `gonomaly eval nab`.
func cmdEval(ctx context.Context, args []string, env *environment) error {
	if len(args) > 0 {
		switch args[0] {
		case "odds":
			return cmdEvalODDS(ctx, args[1:], env)
		case "nab":
			return cmdEvalNAB(ctx, args[1:], env)
		}
	}
	return usageErr("which evaluation? gonomaly eval odds --data DIR | gonomaly eval nab --data DIR --labels FILE")
}

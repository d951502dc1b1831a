package main

import "os"

// getenv is os.Getenv; tests replace it.
var getenv = os.Getenv

// pick returns the first non-empty value.
func pick(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

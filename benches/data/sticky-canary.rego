# sticky-canary in Rego, for the regorus peers in benches/benches/decision.rs:
# the same decision as policies/sticky-canary (target, traffic, reason).
# The interpreter calls the host's bucket through the extension `sy_bucket`;
# the RVM cannot call extensions, so there the host puts it in `input.bucket`
# (computed before timing: about 20 ns of work in regorus's favour).
package switchyard

hdr := lower(object.get(input.flags, "sticky-header", "x-user-id"))

salt := object.get(input.flags, "sticky-salt", input.function)

threshold := round(to_number(object.get(input.flags, "canary-percent", "0")) * 100)

key := input.headers[hdr]

# The RVM variant replaces this line with `bkt := input.bucket`.
bkt := sy_bucket(key, salt)

decision := {"target": input.versions.stable, "traffic": "production", "reason": "no sticky key"} if {
	not key
}

decision := {"target": input.versions.candidate, "traffic": "production", "reason": "in canary"} if {
	key
	bkt < threshold
}

decision := {"target": input.versions.stable, "traffic": "production", "reason": "not in canary"} if {
	key
	bkt >= threshold
}

//! What a new profile contains.

/// Directories of a new profile, parents before children.
pub const LAYOUT_DIRS: &[&str] = &[
    "persona",
    "persona/facets",
    "memory",
    "memory/episodic",
    "memory/tasks",
    "memory/inbox",
    "memory/archive",
    "logs",
    "logs/audit",
    "logs/agents",
    "logs/usage",
    "out",
    ".profiled",
];

/// `profile.toml` of a new profile: every setting commented, so the file
/// documents itself.
pub const PROFILE_TOML: &str = r#"# Your profiled settings. Edit freely; if something here is wrong,
# `profilectl status` names the line and what to fix.

# The name your assistant calls you.
# display_name = "Alice"

# Your time zone (IANA name), for dates shown to you.
# timezone = "Europe/Berlin"

# The model your agents use: an OpenAI-compatible chat endpoint.
# [model]
# provider = "openai"               # the credential name holding the key
# base_url = "https://api.openai.com/v1"
# name = "gpt-4o-mini"
"#;

/// `persona/core.toml` of a new profile.
pub const PERSONA_CORE_TOML: &str = r#"# Your assistant's persona. Keys: name, pronouns, identity, tone, values,
# language. `profilectl persona set KEY VALUE` edits one key.
# name = "Sage"
# identity = "A patient research assistant."
# tone = "warm, concise"
# values = ["honesty", "curiosity"]
"#;

"""The template `snapshot generate` prints (reference/hosted-api.md §5.7): no imports, so that
printing it costs nothing."""

SCHEMA_URL = "https://agentuity.dev/schema/cli/v1/agentuity-snapshot.json"

YAML_TEMPLATE = f"""# yaml-language-server: $schema={SCHEMA_URL}
#
# Agentuity Snapshot Build File
# =============================
#
# This file defines a reproducible sandbox environment.
# Build with: localsb cloud sandbox snapshot build <directory>
# For documentation, see: https://agentuity.dev/Services/Sandbox

# Required: Schema version (must be 1)
version: 1

# Required: Runtime environment
# Format: name:tag (e.g., bun:1, node:20, python:3.12)
# Run 'localsb cloud sandbox runtime list' to see available runtimes
runtime: bun:1

# Optional: Snapshot name (letters, numbers, underscores, and dashes)
# If not provided, a unique name will be auto-generated
# name: my-snapshot

# Optional: Description of this snapshot
# Can be overridden with --description flag
description: My sandbox snapshot

# Optional: Apt packages to install (validated against Debian stable)
# Pin a version with pkg=version, or a version prefix with pkg=version*
# dependencies:
#   - curl
#   - ffmpeg
#   - imagemagick=8:6.9*

# Optional: Files to include from the build directory (glob patterns)
# Prefix a pattern with ! to exclude; exclusions always win
# Files are placed in /home/agentuity/ in the sandbox
# files:
#   - "*.js"              # All JS files in the root
#   - src/**              # Everything under src/
#   - config/*.json       # JSON files in config/
#   - "!**/*.test.js"     # Exclude test files
#   - "!node_modules/**"  # Exclude node_modules

# Optional: Environment variables
# env:
#   NODE_ENV: production
#   API_URL: https://api.example.com
#   SECRET_KEY: ${{SECRET_KEY}}  # Substituted from: --env SECRET_KEY=value

# Optional: Metadata (string values)
# metadata:
#   version: ${{VERSION}}   # Substituted from: --metadata VERSION=1.0.0
#   author: team-name
#   build_date: ${{BUILD_DATE}}
"""

JSON_TEMPLATE = {"$schema": SCHEMA_URL, "version": 1, "runtime": "bun:1", "name": "my-snapshot",
                 "description": "My sandbox snapshot", "dependencies": ["curl"],
                 "files": ["src/**", "*.js", "!**/*.test.js"], "env": {"NODE_ENV": "production"},
                 "metadata": {"version": "1.0.0"}}

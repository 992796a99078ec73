"""From search-space files to finished experiments: `plan` checks everything before Ray starts;
`execute` runs or resumes one experiment; `signals` stops one cleanly; `validate` describes a file.
"""

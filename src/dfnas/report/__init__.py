"""What people look at: the Markdown/HTML document builder, plots and architecture drawings,
shared by the run and bench reports."""

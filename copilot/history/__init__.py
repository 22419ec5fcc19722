"""Git as the experiment record: branch, worktree, round commits, notes, rollback, undo.

Never touches the user's checkout; never imports `copilot.tui`.
"""

"""Fork sources: which upstream sandboxes a team may fork, and the admin routes that allow them."""

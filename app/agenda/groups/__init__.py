"""Group Service: groups, membership with hierarchy rules, group events, group agendas, free slots."""

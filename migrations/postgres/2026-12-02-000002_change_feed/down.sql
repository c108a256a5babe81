DROP TABLE opportunity_event_feed;
DROP TABLE opportunity_events;

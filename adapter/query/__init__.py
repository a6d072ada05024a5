"""Query translation: HA3 query strings and vector-service requests → plans → responses.

    text ──haquery.parse_ha_query──► HAQuery (clause tree)
         ──planner.plan_ha_query(q, catalog)──► SearchPlan + ResponseOptions
         ──executor.execute(plan, engine, embedder)──► hits (+ distinct, facets)
         ──format.format_ha_response / format_ha_error──► HA3 json | fulljson | xml

``ha_service.answer_ha_query`` runs that whole path for the HTTP layer;
``vector_service.handle`` / ``answer`` do the same for ``/vector-service/<endpoint>``.
"""
